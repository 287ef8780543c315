"""DNS: the records a migration moves (records), what the authoritative servers answer (answers), the
providers that change them (cloudflare, rfc2136, manual), what is kept between runs (state), and the
steps and the `dns` task (steps). Nothing here imports the ssh layer but `steps`."""
