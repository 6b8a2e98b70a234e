"""`make bench`: the service against pgbench on one fresh cluster. See bench/run.py."""
