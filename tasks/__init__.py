"""Fabric tasks that move a live Mastodon server to a new host with no downtime and no lost data.

Layers, imports pointing down only:
  settings, facts, checks, templates   ground: validated settings and pure parsers/judgements
  command                              the one command layer (real run, --dry, runbook)
  executor                             Fabric plumbing: two-host tasks, sessions, host keys
  system, postgres, tunnel, mastodon,  one module per subsystem: facts, actions, tasks
  nginx, sidekiq, transfer, dns
  preflight, phases                    phases composed from subsystem steps
  status, runbook                      read the phases
"""
