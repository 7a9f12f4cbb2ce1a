-- Whether a stored PDU or EDU content is canonical JSON. The intake has
-- stored canonical JSON since this migration (1); rows from before it (0)
-- may keep floats, large integers or another key order, so the sender
-- writes them canonically before signing, instead of splicing them in as
-- they are.
ALTER TABLE outgoing_events ADD COLUMN canonical INTEGER NOT NULL DEFAULT 0;
ALTER TABLE destination_edus ADD COLUMN canonical INTEGER NOT NULL DEFAULT 0;
