-- Conversations: one per number per organisation; messages join them by number.
CREATE TABLE conversations (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    phone text NOT NULL,
    status text NOT NULL,
    attention text,
    last_message_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT conversations_org_phone_key UNIQUE (org_id, phone)
);
CREATE INDEX conversations_recent ON conversations (org_id, last_message_at, id);
CREATE INDEX outbound_thread ON outbound_messages (org_id, to_number, created_at);
