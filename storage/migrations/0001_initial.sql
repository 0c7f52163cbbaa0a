-- Users, items, interactions, precomputed recommendations and exposures.
-- External ids are text (UUIDs or any string); models map them to dense indices.

CREATE TABLE users (
    user_id        text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 128),
    demographics   jsonb NOT NULL DEFAULT '{}'::jsonb,
    preferences    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz
);

CREATE TABLE items (
    item_id     text PRIMARY KEY CHECK (length(item_id) BETWEEN 1 AND 128),
    title       text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    categories  text[] NOT NULL DEFAULT '{}',
    brand       text NOT NULL DEFAULT '',
    price       double precision,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'out_of_stock', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Services poll for changed items (status, metadata) by this column.
CREATE INDEX items_updated_at ON items (updated_at);

CREATE TABLE interactions (
    interaction_id bigserial PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users (user_id),
    item_id        text NOT NULL REFERENCES items (item_id),
    type           text NOT NULL
                   CHECK (type IN ('view', 'click', 'add_to_cart', 'purchase', 'rating', 'like')),
    value          double precision NOT NULL DEFAULT 1,
    request_id     text,
    ts             timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- A user's recent history (query hydration, seen-filter) and an item's recent activity.
CREATE INDEX interactions_user_ts ON interactions (user_id, ts DESC);
CREATE INDEX interactions_item_ts ON interactions (item_id, ts DESC);
CREATE INDEX interactions_request ON interactions (request_id) WHERE request_id IS NOT NULL;

-- Batch-computed answers, served when the live pipeline cannot answer.
CREATE TABLE precomputed_recommendations (
    user_id       text NOT NULL,
    surface       text NOT NULL DEFAULT 'home',
    item_ids      text[] NOT NULL,
    scores        double precision[] NOT NULL,
    model_version text NOT NULL DEFAULT '',
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, surface)
);

-- What was shown to whom, for A/B attribution.
CREATE TABLE exposures (
    exposure_id bigserial PRIMARY KEY,
    request_id  text NOT NULL,
    user_id     text NOT NULL,
    surface     text NOT NULL DEFAULT 'home',
    variant     text NOT NULL DEFAULT '',
    item_ids    text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exposures_request ON exposures (request_id);
CREATE INDEX exposures_user ON exposures (user_id, created_at DESC);
