-- Rate limits of each API key (docs/security.md); NULL: the default of the key's scope (RECSYS_RATE_...).
-- rate_per_s: calls per second; burst: calls at once; interactions_per_s: LogInteractions entries per
-- second. A rate of 0 is unlimited. At most a million per second: the limiter counts in microseconds.
ALTER TABLE api_keys
    ADD COLUMN rate_per_s         double precision CHECK (rate_per_s BETWEEN 0 AND 1000000),
    ADD COLUMN burst              integer CHECK (burst BETWEEN 1 AND 1000000),
    ADD COLUMN interactions_per_s double precision CHECK (interactions_per_s BETWEEN 0 AND 1000000);
