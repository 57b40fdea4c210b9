"""The web console (issue 20, first slice): HTTPS, accounts with Argon2id passwords and mandatory TOTP, roles
checked on the server for every route, and read-only pages over the same functions as the CLI.

`accounts` keeps the users file, `sessions` the signed-in sessions, `tls` the certificate, `app` the routes and
their role table, `server` runs uvicorn. See docs/console.md.
"""
