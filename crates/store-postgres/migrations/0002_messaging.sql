-- Messaging: channels, the outbox, inbound messages and the consent ledger, column for
-- column SQLite's 0002 (the schema-drift test holds the two together), in native types.
-- Child rows carry org_id with composite foreign keys, as in 0001. The unique keys that
-- `enqueue`, `insert_inbound` and `record_consent` resolve with ON CONFLICT are named, so
-- that neither the statements nor the error mapping hang on PostgreSQL's defaults; their
-- violations elsewhere are plain `id` conflicts, as in SQLite.

CREATE TABLE channels (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    kind text NOT NULL,
    name text NOT NULL,
    account_sid text NOT NULL,
    auth_token_env text,
    auth_token_sealed text,
    from_number text,
    messaging_service_sid text,
    api_base text NOT NULL,
    settings jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE outbound_messages (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    channel_id uuid,
    patient_id uuid,
    appointment_id uuid,
    to_number text NOT NULL,
    kind text NOT NULL,
    programme text NOT NULL,
    body text NOT NULL,
    segments bigint NOT NULL,
    dedupe_key text NOT NULL,
    state text NOT NULL,
    not_before timestamptz NOT NULL,
    urgent boolean NOT NULL,
    attempts bigint NOT NULL,
    provider_message_id text CONSTRAINT outbound_messages_provider_message_id_key UNIQUE,
    reason text,
    error_code bigint,
    lease_owner text,
    lease_until timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    attempted_at timestamptz,
    CONSTRAINT outbound_messages_dedupe_key UNIQUE (org_id, dedupe_key),
    FOREIGN KEY (org_id, channel_id) REFERENCES channels (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id)
);
-- Only waiting rows are in the claim index, so it stays small however long the history.
CREATE INDEX outbound_due ON outbound_messages (not_before) WHERE state IN ('scheduled', 'queued');
CREATE INDEX outbound_sending ON outbound_messages (attempted_at) WHERE state = 'sending';
CREATE INDEX outbound_patient ON outbound_messages (org_id, patient_id, id);
CREATE INDEX outbound_number ON outbound_messages (org_id, to_number, attempted_at);
CREATE INDEX outbound_channel ON outbound_messages (channel_id, attempted_at);

CREATE TABLE inbound_messages (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    channel_id uuid NOT NULL,
    provider_message_id text NOT NULL CONSTRAINT inbound_messages_provider_message_id_key UNIQUE,
    from_number text NOT NULL,
    to_number text NOT NULL,
    body text NOT NULL,
    details jsonb NOT NULL,
    received_at timestamptz NOT NULL,
    processed_at timestamptz,
    outcome text,
    FOREIGN KEY (org_id, channel_id) REFERENCES channels (org_id, id)
);
CREATE INDEX inbound_unprocessed ON inbound_messages (received_at) WHERE processed_at IS NULL;
CREATE INDEX inbound_from ON inbound_messages (org_id, from_number, id);

CREATE TABLE consent_events (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    phone text NOT NULL,
    scope text NOT NULL,
    status text NOT NULL,
    source text NOT NULL,
    actor text,
    inbound_id uuid REFERENCES inbound_messages (id),
    recorded_at timestamptz NOT NULL
);
CREATE INDEX consent_events_phone ON consent_events (org_id, phone, id);

-- The current state per number and scope, kept with each event for the dispatcher's check.
CREATE TABLE consent_state (
    org_id uuid NOT NULL REFERENCES organizations (id),
    phone text NOT NULL,
    scope text NOT NULL,
    status text NOT NULL,
    event_id uuid NOT NULL REFERENCES consent_events (id),
    updated_at timestamptz NOT NULL,
    CONSTRAINT consent_state_pkey PRIMARY KEY (org_id, phone, scope)
);
