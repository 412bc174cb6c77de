-- HS256 context tokens minted in SQL (pgcrypto), for the benchmarks: mint(i) is a token for user
-- u1 of organization :'org', signed with :'secret' under key id :'kid', different for every i
-- (its jti). Set the three psql variables before including this file.
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pgcrypto') THEN CREATE EXTENSION pgcrypto; END IF; END $$;
CREATE OR REPLACE FUNCTION b64url(bytea) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT translate(rtrim(replace(encode($1, 'base64'), E'\n', ''), '='), '+/', '-_') $$;
SELECT format($f$CREATE OR REPLACE FUNCTION mint(i int) RETURNS text LANGUAGE sql
    AS $m$ SELECT h || '.' || p || '.' || b64url(hmac(h || '.' || p, %L, 'sha256'))
             FROM (SELECT b64url(convert_to(%L, 'utf8')) AS h,
                          b64url(convert_to(format('{"sub":"u1","org_id":"%s","exp":4102444800,"jti":%%s}', i), 'utf8')) AS p) t $m$$f$,
    :'secret', format('{"alg":"HS256","kid":"%s"}', :'kid'), :'org') \gexec
GRANT EXECUTE ON FUNCTION mint(int), b64url(bytea) TO PUBLIC;
