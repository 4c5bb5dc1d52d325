-- POST with a body: `wrk -s post.lua URL -- SIZE` sends SIZE bytes of
-- "0123456789abcdef..." (application/octet-stream); `wrk -s post.lua URL -- json`
-- sends bench's JSON object (application/json). Must match bench/harness.py's bodies.
init = function(args)
  local kind = args[1] or "100"
  wrk.method = "POST"
  if kind == "json" then
    wrk.body = '{"name": "pyrs", "count": 41, "tags": ["fast", "python"]}'
    wrk.headers["Content-Type"] = "application/json"
  else
    local n = tonumber(kind)
    wrk.body = string.sub(string.rep("0123456789abcdef", math.floor(n / 16) + 1), 1, n)
    wrk.headers["Content-Type"] = "application/octet-stream"
  end
end
