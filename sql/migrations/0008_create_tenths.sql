-- Create limits counted in tenths of a second, in tables of their own: during a rolling deploy
-- the release before keeps create_counts (whole seconds) and create_allowances with their
-- meaning, and each release's processes see only their own generation's counts and allowances.
-- A later release may drop the old two. UNLOGGED like them: lost on a crash, rewritten within a
-- sync interval.
CREATE UNLOGGED TABLE create_tenth_counts (
    team_id  uuid    NOT NULL,
    process  text    NOT NULL,  -- host:pid:start of the web process, as in web_processes
    tenth    bigint  NOT NULL,  -- floor(epoch * 10) of the database's clock
    n        integer NOT NULL,  -- creates admitted
    wanted   integer NOT NULL,  -- creates asked for, refused ones too
    PRIMARY KEY (team_id, tenth, process)
);

-- The allowance each process took at its last sync: the creates of a team it may admit before
-- its next one (as create_allowances, for processes counting in tenths).
CREATE UNLOGGED TABLE create_tenth_allowances (
    team_id    uuid    NOT NULL,
    process    text    NOT NULL,
    allowance  float8  NOT NULL,
    PRIMARY KEY (team_id, process)
);
