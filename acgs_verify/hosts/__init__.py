"""Connections to hosts, apart from what is measured on them (probes/): the transport.

  pool.py          HostPool: one connection per host per run, each measurement once, read-ahead of a fleet, sessions
  backends.py      opening a host by its backend (local, ssh, paramiko, ansible): ssh_config, liveness, addresses
  batch.py         many reads of one host in one remote command (the read-ahead's batch and its replay)
  destinations.py  what may reach ssh as a destination: a host's address and user (the profile checks by it too)
  commands.py      the one way a value goes into a remote command: command, operand, glob_word, refuse, refused
  reach.py         whether an address and port answer at all, tried once per run and cited after

Nothing here knows pytest, a check, a probe, a target, a report or the profile beyond its Host (a type):
tests/test_layering.py keeps it so.
"""
