-- acl's credentials: acls, the groups each consumer is in, as Kong declares them.
return {
  acls = {
    fields = {
      { group = { type = "string", required = true, len_min = 1,
                  description = "A group the consumer is in (case-sensitive). The same group "
                    .. "twice for one consumer counts once." } },
    },
  },
}
