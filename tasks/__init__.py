"""Fabric tasks that move a live Mastodon server to a new host with no downtime and no lost data.

Layers, imports pointing down only:
  core, settings, shell, templates     ground: secrets and failures, validated settings, commands as values
  facts, checks                        each question to a host (command + parser); pure judgements
  output, command                      the one output channel; the one command layer (real run, --dry,
                                       runbook): steps as scopes, one way to wait
  executor                             Fabric plumbing: two-host tasks, sessions, host keys
  system, postgres, tunnel, mastodon,  one module per subsystem: its facts, actions and tasks
  nginx, sidekiq, transfer, access,
  dns/
  preflight, phases                    phases composed from subsystem steps, and the table of phases
  status, runbook                      read the phases
The dns/ package's records, answers, state and providers import only core and settings.
"""
