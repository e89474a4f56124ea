-- wrk: GETs of 1,000 keys (written first by the PUT run).
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/kv/keys/bench-" .. (counter % 1000))
end
