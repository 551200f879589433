-- name: key_active_count
SELECT count(*) AS n FROM api_keys WHERE team_id = %(team_id)s AND revoked_at IS NULL;

-- name: key_create
INSERT INTO api_keys (team_id, name, prefix, key_hash)
VALUES (%(team_id)s, %(name)s, %(prefix)s, %(key_hash)s)
RETURNING id, team_id, name, prefix, created_at, revoked_at;

-- name: key_list
SELECT id, team_id, name, prefix, created_at, revoked_at FROM api_keys
WHERE team_id = %(team_id)s ORDER BY created_at, id;

-- name: key_revoke
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id::text = lower(%(key_id)s)
RETURNING id, team_id, name, prefix, created_at, revoked_at;

-- name: key_authenticate
-- Read on every request, never cached, so a revocation holds from the next request on.
SELECT k.id AS key_id, t.id AS team_id, t.plan
FROM api_keys k JOIN teams t ON t.id = k.team_id
WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL;
