// Writes an empty file for every jar `kcl-bootstrap` would download (the names it computes
// from aws-kcl's pom.xml), so `kcl-bootstrap -c <dir>` finds them all and downloads nothing.
// Our daemon needs none of them; this only lets the unmodified bootstrap run without Maven.
'use strict';

const fs = require('fs');
const path = require('path');
const convert = require('xml-js');

const dir = process.argv[2];
const pom = fs.readFileSync(path.join(path.dirname(require.resolve('aws-kcl/package.json')), 'pom.xml'), 'utf8');
const project = JSON.parse(convert.xml2json(pom, { compact: true })).project;
const properties = Object.fromEntries(
  Object.entries(project.properties).map(([k, v]) => ['${' + k + '}', v._text]),
);
let count = 0;
for (const dep of project.dependencies.dependency) {
  const version = properties[dep.version._text] || dep.version._text;
  fs.writeFileSync(path.join(dir, dep.artifactId._text + '-' + version + '.jar'), '');
  count += 1;
}
console.log(count);
