-- The clinic's core records, column for column the SQLite schema (the schema-drift test
-- holds the two together), in native types: uuid, timestamptz, date, jsonb. Every row
-- belongs to an organisation; child rows carry org_id too, with composite foreign keys,
-- so a row can never point into another tenant. Constraints that the store maps to a
-- field in its Conflict errors are named here, so the mapping does not hang on defaults.

CREATE TABLE organizations (
    id uuid NOT NULL PRIMARY KEY,
    slug text NOT NULL CONSTRAINT organizations_slug_key UNIQUE,
    name text NOT NULL,
    time_zone text NOT NULL,
    phone_region text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE api_tokens (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    role text NOT NULL,
    secret_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_tokens_org ON api_tokens (org_id, id);

CREATE TABLE locations (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    doc jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE providers (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    display_name text NOT NULL,
    doc jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE patients (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    birth_date date,
    doc jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    UNIQUE (org_id, id)
);
CREATE INDEX patients_birth_date ON patients (org_id, birth_date);

CREATE TABLE patient_identifiers (
    org_id uuid NOT NULL,
    patient_id uuid NOT NULL,
    authority text NOT NULL,
    type_code text NOT NULL,
    value text NOT NULL,
    CONSTRAINT patient_identifiers_unique UNIQUE (org_id, authority, type_code, value),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_identifiers_value ON patient_identifiers (org_id, value);
CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);

CREATE TABLE patient_phones (
    org_id uuid NOT NULL,
    patient_id uuid NOT NULL,
    e164 text NOT NULL,
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_phones_e164 ON patient_phones (org_id, e164, patient_id);
CREATE INDEX patient_phones_patient ON patient_phones (patient_id);

-- One row per distinct word of a patient's names, folded for search. Collation "C"
-- compares bytes, as SQLite's BINARY does, so a prefix search is the range
-- [prefix, prefix || U+10FFFF) on the primary key, whatever the server's locale.
CREATE TABLE patient_name_keys (
    org_id uuid NOT NULL,
    name_key text COLLATE "C" NOT NULL,
    patient_id uuid NOT NULL,
    PRIMARY KEY (org_id, name_key, patient_id),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_name_keys_patient ON patient_name_keys (patient_id);

CREATE TABLE appointments (
    id uuid NOT NULL PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    patient_id uuid NOT NULL,
    provider_id uuid,
    location_id uuid,
    start_at timestamptz,
    -- start_at, or created_at for appointments without a start, in microseconds since
    -- the epoch: the listing order, and the key of its cursors (as in SQLite).
    sort_at bigint NOT NULL,
    status text NOT NULL,
    doc jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id),
    FOREIGN KEY (org_id, provider_id) REFERENCES providers (org_id, id),
    FOREIGN KEY (org_id, location_id) REFERENCES locations (org_id, id)
);
CREATE INDEX appointments_sort ON appointments (org_id, sort_at, id);
CREATE INDEX appointments_patient ON appointments (org_id, patient_id, sort_at);
CREATE INDEX appointments_provider ON appointments (org_id, provider_id, sort_at);
CREATE INDEX appointments_location ON appointments (org_id, location_id, sort_at);

CREATE TABLE appointment_identifiers (
    org_id uuid NOT NULL,
    appointment_id uuid NOT NULL,
    kind text NOT NULL,
    system text NOT NULL,
    value text NOT NULL,
    CONSTRAINT appointment_identifiers_unique UNIQUE (org_id, kind, system, value),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id) ON DELETE CASCADE
);
CREATE INDEX appointment_identifiers_appointment ON appointment_identifiers (appointment_id);
