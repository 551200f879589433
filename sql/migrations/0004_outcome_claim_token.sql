-- The claim whose outcome (final or retry) was written last. An outcome write clears claim_token,
-- so a write repeated after a lost reply would match nothing and be taken for a stale one; with
-- this column the repeat finds its own earlier write and returns the row (River's pattern), so
-- the onComplete it owes is still sent.
ALTER TABLE tasks ADD COLUMN outcome_claim_token uuid;
