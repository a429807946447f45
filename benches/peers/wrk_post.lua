-- wrk script of benches/peers.sh: POST the same body on every request and
-- print a JSON summary (requests, errors, latency percentiles in µs).
--   wrk -s wrk_post.lua URL -- BODY_FILE CONTENT_TYPE [INFERENCE_HEADER_LENGTH]
-- The third argument sets Inference-Header-Content-Length (the V2 binary
-- tensor extension: the body is a JSON header followed by raw tensor bytes).
function init(args)
    local f = assert(io.open(args[1], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = args[2]
    if args[3] then
        wrk.headers["Inference-Header-Content-Length"] = args[3]
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
