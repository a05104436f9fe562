-- Argo CD health of a librarian.dev resource (DomainMap, ClusterSpecialization): one
-- check for every kind, since all report Ready, observedGeneration and phase.
-- Healthy: Ready=True for the current generation. Progressing: no status yet,
-- the current generation not yet observed, or work under way. Degraded:
-- Ready=False with a reason that needs a person, or phase Failed.
local hs = {}
local progressing = {Pending = true, Analyzing = true, Labeling = true,
                     Configuring = true, Migrating = true, Verifying = true}

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation or nil
local observed = obj.status.observedGeneration
local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

if obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = ready and ready.message or "Failed"
  return hs
end
if generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
if ready ~= nil and ready.status == "False" and not progressing[obj.status.phase or ""] then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = (ready and ready.message) or obj.status.phase or "Progressing"
return hs
