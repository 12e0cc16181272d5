// Runs the official AsyncAPI parser (@asyncapi/parser, pinned in package.json) over
// AsyncAPI documents (YAML or JSON): the files named as arguments, or standard input when
// there are none. Prints the parser's errors (severity 0) as one JSON array on stdout, each
// with the file it is in, and exits 1 when there is any, 0 when every document is valid.
// Warnings go to stderr and do not fail. Exit 2: a file could not be read or the parser
// itself failed.
import { readFileSync } from 'node:fs';
import parserModule from '@asyncapi/parser';

const { Parser, DiagnosticSeverity } = parserModule;

function brief(file, diagnostic) {
  return {
    file,
    code: diagnostic.code,
    message: diagnostic.message,
    path: diagnostic.path,
    line: diagnostic.range?.start?.line,
  };
}

const parser = new Parser();
const files = process.argv.length > 2 ? process.argv.slice(2) : ['-'];
const errors = [];
const warnings = [];
try {
  for (const file of files) {
    const text = readFileSync(file === '-' ? 0 : file, 'utf8');
    for (const diagnostic of await parser.validate(text)) {
      if (diagnostic.severity === DiagnosticSeverity.Error) {
        errors.push(brief(file, diagnostic));
      } else if (diagnostic.severity === DiagnosticSeverity.Warning) {
        warnings.push(brief(file, diagnostic));
      }
    }
  }
} catch (error) {
  process.stderr.write(`validate.mjs: ${error?.stack ?? error}\n`);
  process.exit(2);
}
if (warnings.length > 0) {
  process.stderr.write(`${JSON.stringify(warnings, null, 2)}\n`);
}
process.stdout.write(`${JSON.stringify(errors, null, 2)}\n`);
process.exitCode = errors.length > 0 ? 1 : 0;
