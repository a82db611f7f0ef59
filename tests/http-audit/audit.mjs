// The graphql-http audit suite (GraphQL over HTTP conformance) against the
// server at the URL given as the only argument. Prints every audit that is not
// "ok"; exits non-zero when any is an error, or a warning or notice that
// ACCEPTED_FINDINGS does not list with a reason.
import { auditServer } from 'graphql-http';

// Findings we accept, by audit id, with why. Empty: every audit passes.
const ACCEPTED_FINDINGS = {};

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs http://127.0.0.1:PORT/graphql');
  process.exit(2);
}
const results = await auditServer({ url });
let failures = 0;
for (const result of results) {
  if (result.status === 'ok') continue;
  const accepted = result.status !== 'error' && ACCEPTED_FINDINGS[result.id];
  if (!accepted) failures++;
  const note = accepted ? ` (accepted: ${accepted})` : '';
  console.log(`${result.status.toUpperCase()} ${result.id} ${result.name}: ${result.reason}${note}`);
}
const passed = results.filter((result) => result.status === 'ok').length;
console.log(`graphql-http audit: ${results.length} audits, ${passed} ok, ${failures} failing`);
process.exit(failures ? 1 : 0);
