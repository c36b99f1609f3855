-- EHR integration: HL7 interfaces and the log of every message they received, the record
-- events that journeys and webhooks follow, webhook endpoints and the deliveries to them
-- (and to EHRs over MLLP), FHIR documents kept as submitted, and patient merges.
-- `seq` columns number rows in the order they were written: the one writer assigns
-- MAX(seq) + 1 inside its BEGIN IMMEDIATE transaction (PostgreSQL uses an identity).

-- Set on the patient that was merged into another (the survivor); such patients keep
-- their history but are no longer listed.
ALTER TABLE patients ADD COLUMN merged_into UUID;

CREATE TABLE hl7_interfaces (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    sending_application TEXT,
    sending_facility TEXT,
    settings JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (org_id, id),
    UNIQUE (org_id, name)
);

CREATE TABLE hl7_messages (
    id UUID NOT NULL PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    org_id UUID NOT NULL REFERENCES organizations (id),
    interface_id UUID,
    received_at TIMESTAMP NOT NULL,
    -- MSH-3|MSH-4; with MSH-10 and the hash of the exact bytes, the duplicate key.
    sender TEXT NOT NULL,
    control_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    message_type TEXT NOT NULL,
    raw BLOB NOT NULL,
    ack TEXT NOT NULL,
    ack_code TEXT NOT NULL,
    state TEXT NOT NULL,
    result JSON,
    processed_at TIMESTAMP,
    UNIQUE (org_id, sender, control_id, content_hash),
    FOREIGN KEY (org_id, interface_id) REFERENCES hl7_interfaces (org_id, id)
);
-- Only pending rows are in the queue's index, so it stays small however long the log.
CREATE INDEX hl7_messages_pending ON hl7_messages (seq) WHERE state = 'pending';
CREATE INDEX hl7_messages_received ON hl7_messages (org_id, received_at, id);
CREATE INDEX hl7_messages_control ON hl7_messages (org_id, control_id);

CREATE TABLE record_events (
    id UUID NOT NULL PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    org_id UUID NOT NULL REFERENCES organizations (id),
    kind TEXT NOT NULL,
    patient_id UUID,
    appointment_id UUID,
    source_kind TEXT NOT NULL,
    source_ref TEXT,
    changes JSON NOT NULL,
    at TIMESTAMP NOT NULL,
    routed BOOLEAN NOT NULL,
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id)
);
CREATE INDEX record_events_unrouted ON record_events (seq) WHERE NOT routed;
CREATE INDEX record_events_org ON record_events (org_id, seq);
CREATE INDEX record_events_appointment ON record_events (org_id, appointment_id, seq);
CREATE INDEX record_events_patient ON record_events (org_id, patient_id, seq);

CREATE TABLE webhook_endpoints (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    url TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    events JSON NOT NULL,
    active BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (org_id, id)
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id, id);

-- One event on its way to one target: a webhook endpoint or an interface's outbound
-- connection, hence no foreign key on target_id. event_id has none either, so that a
-- test ping can be sent for an event that was never recorded.
CREATE TABLE deliveries (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    target_kind TEXT NOT NULL,
    target_id UUID NOT NULL,
    event_id UUID NOT NULL,
    event_kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_state ON deliveries (org_id, state, created_at);
CREATE INDEX deliveries_recent ON deliveries (org_id, created_at, id);

CREATE TABLE fhir_documents (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    resource_type TEXT NOT NULL,
    patient_id UUID,
    authored TIMESTAMP,
    resource JSON NOT NULL,
    version INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id)
);
CREATE INDEX fhir_documents_patient ON fhir_documents (org_id, resource_type, patient_id, id);
CREATE INDEX fhir_documents_type ON fhir_documents (org_id, resource_type, id);
