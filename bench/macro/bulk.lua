-- wrk script of the macro benchmark for bulk downloads: no response() hook
-- (it would make wrk buffer every 64 MiB body), so wrk counts statuses >= 400
-- itself (err_status) and the harness checks status, pool and size of one
-- download with curl before the run and the bytes per answer after it.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'KTBENCH {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"mean_us": %.1f, "err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, ' ..
      '"err_timeout": %d, "bad_status": 0, "wrong_pool": 0, "checked": 0}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(99), latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
