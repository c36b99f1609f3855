-- The clinic's core records. Every row belongs to an organisation; child rows carry
-- org_id too, with composite foreign keys, so a row can never point into another tenant.
-- Declared types name the broad class (UUID, TIMESTAMP = microseconds since the epoch,
-- DATE = 'YYYY-MM-DD', JSON) that the schema-drift test compares with PostgreSQL.

CREATE TABLE organizations (
    id UUID NOT NULL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    phone_region TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE api_tokens (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX api_tokens_org ON api_tokens (org_id, id);

CREATE TABLE locations (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    doc JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE providers (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    display_name TEXT NOT NULL,
    doc JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE patients (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    birth_date DATE,
    doc JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (org_id, id)
);
CREATE INDEX patients_birth_date ON patients (org_id, birth_date);

CREATE TABLE patient_identifiers (
    org_id UUID NOT NULL,
    patient_id UUID NOT NULL,
    authority TEXT NOT NULL,
    type_code TEXT NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (org_id, authority, type_code, value),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_identifiers_value ON patient_identifiers (org_id, value);
CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);

CREATE TABLE patient_phones (
    org_id UUID NOT NULL,
    patient_id UUID NOT NULL,
    e164 TEXT NOT NULL,
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_phones_e164 ON patient_phones (org_id, e164, patient_id);
CREATE INDEX patient_phones_patient ON patient_phones (patient_id);

-- One row per distinct word of a patient's names, folded for search.
CREATE TABLE patient_name_keys (
    org_id UUID NOT NULL,
    name_key TEXT NOT NULL,
    patient_id UUID NOT NULL,
    PRIMARY KEY (org_id, name_key, patient_id),
    FOREIGN KEY (org_id, patient_id) REFERENCES patients (org_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_name_keys_patient ON patient_name_keys (patient_id);

CREATE TABLE appointments (
    id UUID NOT NULL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id),
    patient_id UUID NOT NULL,
    provider_id UUID,
    location_id UUID,
    start_at TIMESTAMP,
    -- start_at, or created_at for appointments without a start: the listing order.
    sort_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version INTEGER NOT NULL,
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
    org_id UUID NOT NULL,
    appointment_id UUID NOT NULL,
    kind TEXT NOT NULL,
    system TEXT NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (org_id, kind, system, value),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id) ON DELETE CASCADE
);
CREATE INDEX appointment_identifiers_appointment ON appointment_identifiers (appointment_id);
