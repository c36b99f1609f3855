-- An organisation's messaging settings (quiet hours, caps, keyword replies…); '{}' means the defaults.
ALTER TABLE organizations ADD COLUMN messaging JSON NOT NULL DEFAULT '{}';
