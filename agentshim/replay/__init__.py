"""Multi-tenant trace replay: tenants replay agent traces in real cgroups or containers under
the policies none, static, reactive and agentshim, and the runs are compared (docs/replay.md).

The modules that run inside a tenant's container (schedule, alloc, tenant) use the standard
library only: the replay image holds a bare Python, not agentshim's dependencies.
"""
