// Evaluates IAM requests with @cloud-copilot/iam-simulate: reads a JSON array
// of simulations (its `Simulation` shape) on stdin and prints, for each, the
// decision ("Allowed", "ExplicitlyDenied", "ImplicitlyDenied") or the
// simulator's validation error, as a JSON array in the same order.
// tests/tests/iam_matrix.rs builds the simulations from template.yaml.
//
// A simulation with `"contextKeysWithColons": true` is decided without the
// simulator's context key filter: the filter drops variable keys whose
// variable follows a colon (kms:EncryptionContext:PARAMETER_ARN), which would
// leave every encryption-context condition unmatched. Its policies are still
// validated first.
import { runSimulation, runUnsafeSimulation } from '@cloud-copilot/iam-simulate'

let input = ''
for await (const chunk of process.stdin) input += chunk
const results = []
for (const given of JSON.parse(input)) {
  const { contextKeysWithColons, ...rest } = given
  const simulation = { serviceControlPolicies: [], resourceControlPolicies: [], ...rest }
  const validated = await runSimulation(simulation, {})
  if (validated.resultType === 'error') {
    results.push({ error: validated.errors.message, details: validated.errors })
  } else if (contextKeysWithColons) {
    // (The unsafe engine loads the resource policy without a name, which its
    // analysis then reads: given as an already validated policy, it has one.)
    const resourcePolicy = simulation.resourcePolicy && {
      __validated: true,
      policyDocument: simulation.resourcePolicy,
      metadata: { name: 'resource policy' }
    }
    results.push({ decision: runUnsafeSimulation({ ...simulation, resourcePolicy }, {}) })
  } else {
    results.push({ decision: validated.overallResult })
  }
}
process.stdout.write(JSON.stringify(results))
