-- Delivery receipts that arrive before the provider's message id is recorded on its
-- outbound message (the provider can call back faster than the send's own answer is
-- written). Applied, then deleted, as soon as the id is known.
CREATE TABLE early_status_reports (
    id UUID NOT NULL PRIMARY KEY,
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code INTEGER,
    received_at TIMESTAMP NOT NULL
);
CREATE INDEX early_status_reports_sid ON early_status_reports (provider_message_id);
