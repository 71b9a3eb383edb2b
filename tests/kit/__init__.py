"""The domain test kit: the app on each backend, tenants with users of every role, factories
for request bodies, the problem assertion, and a declarative CRUD test base (`kit.crud`)."""
