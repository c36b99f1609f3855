-- Conversations: one per number per organisation; messages join them by number.
CREATE TABLE conversations (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    phone TEXT NOT NULL,
    status TEXT NOT NULL,
    attention TEXT,
    last_message_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (org_id, phone)
);
CREATE INDEX conversations_recent ON conversations (org_id, last_message_at, id);
CREATE INDEX outbound_thread ON outbound_messages (org_id, to_number, created_at);
