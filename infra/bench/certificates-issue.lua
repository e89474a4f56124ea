-- wrk: POST /certificates (durable issues) alternating between classes CS and PS.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local class = (counter % 4 == 0) and "PS" or "CS"
  return wrk.format(nil, "/certificates", nil, '{"name":"Bench Holder","amount":1,"class":"' .. class .. '"}')
end
