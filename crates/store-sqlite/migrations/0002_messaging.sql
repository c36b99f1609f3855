-- Messaging: channels, the outbox, inbound messages and the consent ledger.

CREATE TABLE channels (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    account_sid TEXT NOT NULL,
    auth_token_env TEXT,
    auth_token_sealed TEXT,
    from_number TEXT,
    messaging_service_sid TEXT,
    api_base TEXT NOT NULL,
    settings JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE outbound_messages (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    channel_id UUID,
    patient_id UUID,
    appointment_id UUID,
    to_number TEXT NOT NULL,
    kind TEXT NOT NULL,
    programme TEXT NOT NULL,
    body TEXT NOT NULL,
    segments INTEGER NOT NULL,
    dedupe_key TEXT NOT NULL,
    state TEXT NOT NULL,
    not_before TIMESTAMP NOT NULL,
    urgent BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    provider_message_id TEXT UNIQUE,
    reason TEXT,
    error_code INTEGER,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    attempted_at TIMESTAMP,
    UNIQUE (org_id, dedupe_key),
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
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    channel_id UUID NOT NULL,
    provider_message_id TEXT NOT NULL UNIQUE,
    from_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    body TEXT NOT NULL,
    details JSON NOT NULL,
    received_at TIMESTAMP NOT NULL,
    processed_at TIMESTAMP,
    outcome TEXT,
    FOREIGN KEY (org_id, channel_id) REFERENCES channels (org_id, id)
);
CREATE INDEX inbound_unprocessed ON inbound_messages (received_at) WHERE processed_at IS NULL;
CREATE INDEX inbound_from ON inbound_messages (org_id, from_number, id);

CREATE TABLE consent_events (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    phone TEXT NOT NULL,
    scope TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    actor TEXT,
    inbound_id UUID REFERENCES inbound_messages (id),
    recorded_at TIMESTAMP NOT NULL
);
CREATE INDEX consent_events_phone ON consent_events (org_id, phone, id);

-- The current state per number and scope, kept with each event for the dispatcher's check.
CREATE TABLE consent_state (
    org_id UUID NOT NULL REFERENCES organizations (id),
    phone TEXT NOT NULL,
    scope TEXT NOT NULL,
    status TEXT NOT NULL,
    event_id UUID NOT NULL REFERENCES consent_events (id),
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, phone, scope)
);
