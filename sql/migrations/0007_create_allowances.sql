-- Create limits, exact between processes: at each sync a web process takes an allowance, the
-- creates of a team it may admit before its next sync, and writes it here. Syncs run one at a
-- time (an advisory lock), and each leaves alone what the others' allowances may still spend,
-- so counts and allowances together never pass a team's rate, whatever the syncs' phases.
-- UNLOGGED like create_counts: lost on a crash, it is rewritten within one sync interval.
CREATE UNLOGGED TABLE create_allowances (
    team_id    uuid    NOT NULL,
    process    text    NOT NULL,  -- host:pid:start of the web process, as in create_counts
    allowance  float8  NOT NULL,
    PRIMARY KEY (team_id, process)
);

-- The creates each process was asked for, refused ones too: a process's part of a team's
-- headroom follows its part of the team's requests, so one that is short of allowance is not
-- kept short because it admitted less.
ALTER TABLE create_counts ADD COLUMN wanted integer NOT NULL DEFAULT 0;
