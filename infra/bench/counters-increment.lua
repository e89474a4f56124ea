-- wrk: POST /increment of 1 spread over 1,000 counters.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/increment", nil, '{"key":"bench-' .. (counter % 1000) .. '","value":1}')
end
