"""Helpers shared by the test folders (and the benchmarks): fakes of external services, a live
server on loopback, a throwaway PostgreSQL, stored records, tiny models, a provider config."""
