"""The operators' figures and their model, community, payment and plan
areas (AdminInsightsService, protos/omnihub/admin/v1/insights.proto).

Nothing here is stored in the admin schema but the audit trail and the
admin tasks: figures are asked of the services that own the data, and
changes are made by them.
"""
