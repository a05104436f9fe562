-- Argo CD health of a librarian.dev resource (DomainMap, ClusterSpecialization,
-- RebalancePolicy): one check for every kind, since all report Ready,
-- observedGeneration and phase.
-- Healthy: Ready=True for the current generation. Progressing: no status yet,
-- the current generation not yet observed, or work under way. Degraded:
-- Ready=False with a reason that needs a person, phase Failed, or Stalled=True (a Job
-- whose pod cannot start: ImagePullBackOff, Unschedulable, ...).
-- A RebalancePolicy whose proposal waits for a person's approval is Suspended,
-- one executing moves is Progressing, and one with a proposal it only shows
-- (observe mode, or outside a maintenance window) is Healthy with the proposal
-- in the message.
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
local phase = obj.status.phase
local ready = nil
local proposal = nil
local stalled = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "ProposalPending" and condition.status == "True" then
      proposal = condition
    elseif condition.type == "Stalled" and condition.status == "True" then
      stalled = condition
    end
  end
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = ready and ready.message or "Failed"
  return hs
end
if generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
if phase == "Executing" then
  hs.status = "Progressing"
  hs.message = obj.status.message or (ready and ready.message) or "Executing moves"
  return hs
end
if phase == "AwaitingApproval" and (ready == nil or ready.status ~= "False") then
  local name = obj.metadata and obj.metadata.name or "NAME"
  local namespace = obj.metadata and obj.metadata.namespace
  local where = namespace and ("-n " .. namespace .. " ") or ""
  local plan = obj.status.proposal
  local what = "Proposal"
  if plan ~= nil and plan.id ~= nil then
    what = what .. " " .. tostring(plan.id)
  end
  if plan ~= nil and type(plan.moves) == "table" then
    what = what .. " (" .. tostring(#plan.moves) .. " moves)"
  end
  hs.status = "Suspended"
  hs.message = what .. " awaits approval: kubectl " .. where .. "annotate rebalancepolicy "
    .. name .. " librarian.dev/rebalance=approve"
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  if phase == "ProposalReady" then
    hs.message = obj.status.message or (proposal and proposal.message) or hs.message
  end
  return hs
end
if ready ~= nil and ready.status == "False" and not progressing[phase or ""] then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = (ready and ready.message) or phase or "Progressing"
return hs
