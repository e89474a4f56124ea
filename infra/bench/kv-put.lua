-- wrk: durable single-key PUTs spread over 1,000 keys.
wrk.method = "PUT"
wrk.body = '{"value":"benchmark value"}'
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/kv/keys/bench-" .. (counter % 1000))
end
