-- EHR integration, column for column SQLite's 0007 (the schema-drift test holds the two
-- together), in native types: HL7 interfaces and the log of every message they received,
-- the record events that journeys and webhooks follow, webhook endpoints and the
-- deliveries to them (and to EHRs over MLLP), FHIR documents kept as submitted, and
-- patient merges. `seq` columns are identities: they number rows in the order they were
-- written (transactions may commit out of that order; the queues read flags, not ranges).

-- Set on the patient that was merged into another (the survivor); such patients keep
-- their history but are no longer listed.
ALTER TABLE patients ADD COLUMN merged_into uuid;

CREATE TABLE hl7_interfaces (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    sending_application text,
    sending_facility text,
    settings jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (org_id, id),
    CONSTRAINT hl7_interfaces_name_key UNIQUE (org_id, name)
);

CREATE TABLE hl7_messages (
    id uuid NOT NULL PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT hl7_messages_seq_key UNIQUE,
    org_id uuid NOT NULL REFERENCES organizations (id),
    interface_id uuid,
    received_at timestamptz NOT NULL,
    -- MSH-3|MSH-4; with MSH-10 and the hash of the exact bytes, the duplicate key.
    sender text NOT NULL,
    control_id text NOT NULL,
    content_hash text NOT NULL,
    message_type text NOT NULL,
    raw bytea NOT NULL,
    ack text NOT NULL,
    ack_code text NOT NULL,
    state text NOT NULL,
    result jsonb,
    processed_at timestamptz,
    CONSTRAINT hl7_messages_duplicate_key UNIQUE (org_id, sender, control_id, content_hash),
    FOREIGN KEY (org_id, interface_id) REFERENCES hl7_interfaces (org_id, id)
);
-- Only pending rows are in the queue's index, so it stays small however long the log.
CREATE INDEX hl7_messages_pending ON hl7_messages (seq) WHERE state = 'pending';
CREATE INDEX hl7_messages_received ON hl7_messages (org_id, received_at, id);
CREATE INDEX hl7_messages_control ON hl7_messages (org_id, control_id);

CREATE TABLE record_events (
    id uuid NOT NULL PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT record_events_seq_key UNIQUE,
    org_id uuid NOT NULL REFERENCES organizations (id),
    kind text NOT NULL,
    patient_id uuid,
    appointment_id uuid,
    source_kind text NOT NULL,
    source_ref text,
    changes jsonb NOT NULL,
    at timestamptz NOT NULL,
    routed boolean NOT NULL,
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id)
);
CREATE INDEX record_events_unrouted ON record_events (seq) WHERE NOT routed;
CREATE INDEX record_events_org ON record_events (org_id, seq);
CREATE INDEX record_events_appointment ON record_events (org_id, appointment_id, seq);
CREATE INDEX record_events_patient ON record_events (org_id, patient_id, seq);

CREATE TABLE webhook_endpoints (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    url text NOT NULL,
    secret_sealed text NOT NULL,
    events jsonb NOT NULL,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (org_id, id)
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id, id);

-- One event on its way to one target: a webhook endpoint or an interface's outbound
-- connection, hence no foreign key on target_id. event_id has none either, so that a
-- test ping can be sent for an event that was never recorded.
CREATE TABLE deliveries (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    target_kind text NOT NULL,
    target_id uuid NOT NULL,
    event_id uuid NOT NULL,
    event_kind text NOT NULL,
    payload text NOT NULL,
    state text NOT NULL,
    attempts bigint NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    lease_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_state ON deliveries (org_id, state, created_at);
CREATE INDEX deliveries_recent ON deliveries (org_id, created_at, id);

CREATE TABLE fhir_documents (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    resource_type text NOT NULL,
    patient_id uuid,
    authored timestamptz,
    resource jsonb NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id)
);
CREATE INDEX fhir_documents_patient ON fhir_documents (org_id, resource_type, patient_id, id);
CREATE INDEX fhir_documents_type ON fhir_documents (org_id, resource_type, id);
