// isomorphic-git against artifactd, the way the spec's Workers example uses it, run under
// Node with a temp-dir fs. Driven by tests/test_git_clients.py:
//   node interop.mjs push  <remote> <token> <dir>   init a repo, write files, commit, push
//   node interop.mjs clone <remote> <token> <dir>   clone (Bearer header), print HEAD oid
//   node interop.mjs fetch <remote> <token> <dir>   fetch + fast-forward, print HEAD oid
// Push authenticates with onAuth (Basic, token secret as password, as the spec's remote URL
// form does); clone and fetch send "Authorization: Bearer <full token>" as a header.
import fs from "node:fs";
import path from "node:path";
import git from "isomorphic-git";
import http from "isomorphic-git/http/node";

const [command, url, token, dir] = process.argv.slice(2);
const author = { name: "Node Author", email: "node@example.com", timestamp: 1767225600, timezoneOffset: 0 };
const secret = token.split("?expires=")[0];
const onAuth = () => ({ username: "x", password: secret });
const headers = { Authorization: `Bearer ${token}` };

async function push() {
  fs.mkdirSync(path.join(dir, "src"), { recursive: true });
  await git.init({ fs, dir, defaultBranch: "main" });
  fs.writeFileSync(path.join(dir, "README.md"), "# from isomorphic-git\n");
  fs.writeFileSync(path.join(dir, "src", "index.js"), "export const answer = 42;\n");
  await git.add({ fs, dir, filepath: "README.md" });
  await git.add({ fs, dir, filepath: "src/index.js" });
  const oid = await git.commit({ fs, dir, message: "Commit from isomorphic-git", author });
  const result = await git.push({ fs, http, dir, url, ref: "main", remoteRef: "main", onAuth });
  if (!result.ok) throw new Error(`push failed: ${JSON.stringify(result)}`);
  console.log(oid);
}

async function clone() {
  await git.clone({ fs, http, dir, url, ref: "main", singleBranch: true, headers });
  console.log(await git.resolveRef({ fs, dir, ref: "HEAD" }));
}

async function fetch() {
  await git.pull({ fs, http, dir, url, ref: "main", singleBranch: true, fastForwardOnly: true, headers, author });
  console.log(await git.resolveRef({ fs, dir, ref: "HEAD" }));
}

const commands = { push, clone, fetch };
commands[command]().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
