-- noop: a bench plugin with no settings.
return { name = "noop", fields = { { config = { type = "record", fields = {} } } } }
