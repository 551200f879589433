-- name: team_create
INSERT INTO teams (name, plan) VALUES (%(name)s, %(plan)s)
RETURNING id, name, plan, created_at;

-- name: team_list
SELECT t.id, t.name, t.plan, t.created_at,
       (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS members,
       (SELECT count(*) FROM api_keys k WHERE k.team_id = t.id AND k.revoked_at IS NULL) AS active_keys
FROM teams t ORDER BY t.created_at, t.name;

-- name: team_find
-- TEAM on the command line is an id or a name; a name that looks like a uuid still matches by name.
SELECT id, name, plan, created_at FROM teams
WHERE name = %(ref)s OR id::text = lower(%(ref)s)
ORDER BY (name = %(ref)s) DESC LIMIT 1;

-- name: team_lock
-- Held until the transaction ends: a team's limit checks take turns, each on its plan as it is.
SELECT id, name, plan, created_at FROM teams WHERE id = %(team_id)s FOR UPDATE;

-- name: team_set_plan
UPDATE teams SET plan = %(plan)s WHERE id = %(team_id)s
RETURNING id, name, plan, created_at;

-- name: member_count
SELECT count(*) AS n FROM team_members WHERE team_id = %(team_id)s;

-- name: member_add
INSERT INTO team_members (team_id, email) VALUES (%(team_id)s, %(email)s)
ON CONFLICT DO NOTHING
RETURNING team_id, email, created_at;

-- name: member_remove
DELETE FROM team_members WHERE team_id = %(team_id)s AND email = %(email)s
RETURNING team_id, email, created_at;

-- name: member_list
SELECT team_id, email, created_at FROM team_members
WHERE team_id = %(team_id)s ORDER BY created_at, email;
