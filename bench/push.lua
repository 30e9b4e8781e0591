-- wrk script: POST the push example with a precomputed signature and a delivery id of
-- its own per request (run id, thread number, counter), so every request is new work.
local body_file = os.getenv("FUT_BODY")
local signature = os.getenv("FUT_SIG")
local run_id = os.getenv("FUT_RUN") or tostring(os.time())

local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

local counter = 0
function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = "push",
    ["X-GitHub-Hook-ID"] = "1",
    ["X-Hub-Signature-256"] = signature,
    ["X-GitHub-Delivery"] = run_id .. "-" .. tid .. "-" .. counter,
  }
  return wrk.format("POST", nil, headers, body)
end
