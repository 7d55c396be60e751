-- prometheus: which metric families sluice collects, and whether this instance answers scrapes.
--
-- The collection flags are Kong's (all off by default, as in Kong 3). sluice
-- counts in C for the whole node: a family is collected when any enabled
-- instance turns it on (core/metrics.c reads them at config load).
local function flag(description)
  return { type = "boolean", default = false, required = true, description = description }
end

return {
  name = "prometheus",
  fields = {
    { config = {
        type = "record",
        fields = {
          { status_code_metrics = flag("Collect sluice_http_requests_total: requests per "
              .. "service, route, status code and source (service, exit or error).") },
          { latency_metrics = flag("Collect the sluice_request_latency_ms, "
              .. "sluice_upstream_latency_ms and sluice_latency_ms histograms per service "
              .. "and route.") },
          { bandwidth_metrics = flag("Collect sluice_bandwidth_bytes: bytes received from "
              .. "clients (ingress) and sent to them (egress) per service and route.") },
          { upstream_health_metrics = flag("Export sluice_upstream_target_health: the health "
              .. "state of every target of every upstream, from the shared health checks.") },
          { per_consumer = flag("Add a consumer label (its username, else custom_id, else "
              .. "id) to sluice_http_requests_total and sluice_bandwidth_bytes for requests "
              .. "an auth plugin tied to a consumer of the config; \"\" for the others.") },
          { ai_metrics = flag("Kong's AI metrics. Accepted so that Kong files load; sluice "
              .. "has no AI plugins and exports none.") },
          { serve_metrics = flag("This instance answers every request of its route with the "
              .. "metrics in the Prometheus text format (GET and HEAD; other methods get "
              .. "405), without proxying. Put it on a route of its own, e.g. /metrics.") },
        },
      } },
  },
}
