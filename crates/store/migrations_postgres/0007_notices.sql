-- Notices between Herald instances sharing this database (see
-- `crates/store/src/notices/`). Every change to a `destinations` row, and
-- every room a destination gains or loses, notifies channel
-- `herald_destinations` in the writing transaction, delivered at its
-- commit. The payload is the writing session's `herald.instance` setting
-- (empty for a session that is not Herald's), a space, and the
-- destination's name ('*' for a name too long for a payload: re-read
-- everything). PostgreSQL sends identical payloads of one transaction once,
-- so a commit that touches a destination many times notifies it once.
-- A bulk write (an import) sets `herald.bulk` to 'on' in its transaction
-- and notifies '*' once instead of once per row.
CREATE FUNCTION herald_destination_notice() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    instance text := COALESCE(current_setting('herald.instance', true), '');
    name text;
BEGIN
    IF current_setting('herald.bulk', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        name := OLD.destination;
    ELSE
        name := NEW.destination;
        IF TG_OP = 'UPDATE' AND OLD.destination IS DISTINCT FROM NEW.destination THEN
            PERFORM pg_notify('herald_destinations', instance || ' ' ||
                CASE WHEN octet_length(OLD.destination) > 7000 THEN '*' ELSE OLD.destination END);
        END IF;
    END IF;
    PERFORM pg_notify('herald_destinations', instance || ' ' ||
        CASE WHEN octet_length(name) > 7000 THEN '*' ELSE name END);
    RETURN NULL;
END
$$;

CREATE TRIGGER destinations_notice_insert_delete AFTER INSERT OR DELETE ON destinations
    FOR EACH ROW EXECUTE FUNCTION herald_destination_notice();
-- An update that changes nothing notifies nothing.
CREATE TRIGGER destinations_notice_update AFTER UPDATE ON destinations
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION herald_destination_notice();
-- Only the room count is indexed: a room's newer stream ordering is not.
CREATE TRIGGER destination_rooms_notice AFTER INSERT OR DELETE ON destination_rooms
    FOR EACH ROW EXECUTE FUNCTION herald_destination_notice();
