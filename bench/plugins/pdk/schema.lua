-- pdk: a bench plugin with no settings.
return { name = "pdk", fields = { { config = { type = "record", fields = {} } } } }
