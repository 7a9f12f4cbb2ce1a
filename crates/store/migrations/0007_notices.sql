-- Nothing on SQLite: notices between instances sharing one database exist on
-- PostgreSQL only (see migrations_postgres/0007_notices.sql); an SQLite file
-- has one Herald process. This version exists so both sets stay in step.
SELECT 1;
