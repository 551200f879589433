-- Which worker (host:pid) holds a task's current claim: for operators asking "who is running
-- this?", and for the fault drill's count of tasks in flight on a killed worker.
ALTER TABLE tasks ADD COLUMN claimed_by text;
