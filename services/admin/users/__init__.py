"""The users area of the admin service: users (list, detail, status, credits,
notes, activity, deletion, CSV export) and operator accounts, served as
AdminUsersService (protos/omnihub/admin/v1/users.proto)."""
