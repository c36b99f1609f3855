-- Pictures patients text us (insurance cards, rashes): fetched from the provider with the
-- channel's credentials, size-limited, kept with their message.
CREATE TABLE inbound_media (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    inbound_id uuid NOT NULL REFERENCES inbound_messages (id),
    position bigint NOT NULL,
    content_type text NOT NULL,
    size bigint NOT NULL,
    data bytea NOT NULL,
    fetched_at timestamptz NOT NULL,
    CONSTRAINT inbound_media_inbound_position_key UNIQUE (inbound_id, position)
);
CREATE INDEX inbound_media_org ON inbound_media (org_id, id);
