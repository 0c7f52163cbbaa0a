-- API keys of the public API (docs/security.md). Only the key's SHA-256 is stored; the key is shown once.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    scope        text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    key_hash     text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
