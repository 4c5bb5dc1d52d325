-- Pipelined GET, as in haywire's benchmark: `wrk -s pipelined_get.lua URL -- DEPTH`
-- sends DEPTH requests for the same path in one write per round trip.
init = function(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
