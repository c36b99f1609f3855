-- Pictures patients text us (insurance cards, rashes): fetched from the provider with the
-- channel's credentials, size-limited, kept with their message.
CREATE TABLE inbound_media (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    inbound_id UUID NOT NULL REFERENCES inbound_messages (id),
    position INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    fetched_at TIMESTAMP NOT NULL,
    UNIQUE (inbound_id, position)
);
CREATE INDEX inbound_media_org ON inbound_media (org_id, id);
