#!/usr/bin/env node
// What the deploy tools would send, computed by their own code, with no account and no network.
//
//   node deploy-check/format.js serverless serverless.yml   (${env:...} from this process's env)
//   node deploy-check/format.js cloudbase cloudbaserc.json  ({{env.X}} from this process's env)
//
// Prints one JSON document on stdout. tests/contract/test_deploy_tools.py reads it.
//
// serverless: multi-scf's own formatter is TypeScript that is not published to npm, so its
// three steps are restated here from serverless-components/tencent-multi-scf src/formatter.ts
// (0.3.14): `formatInputs` spreads every key of `inputs` (but `src`) into each function under
// the function's own keys, with `type`/`namespace`/`runtime`/`description` defaulted
// (runtime Nodejs12.16, src/config.ts) and the name `${name}-${stage}-${app}-${key}`;
// `formatFaasInputs` turns `environments` (default []) into `environment.variables` and
// `vpc` into `vpcConfig`; `formatTriggerInputs` hands a non-apigw trigger its function as
// {name, type, namespace}. Everything after that is tencent-component-toolkit's code, called
// as multi-scf calls it: the SCF module's `formatInputs` (the CreateFunction parameters) and
// each trigger class's `formatInputs` (the CreateTrigger parameters).
//
// cloudbase: @cloudbase/cli 2.x loads cloudbaserc.json with @cloudbase/toolbox's ConfigParser
// and then merges `functionDefaultConfig` into each function with lodash's merge
// (TencentCloudBase/cloudbase-cli src/utils/config.ts, getCloudBaseConfig); this does the same.
'use strict';

const fs = require('fs');
const path = require('path');

// The Serverless Components CLI parses serverless.yml with js-yaml and then replaces each
// ${env:NAME} inside string values with that variable, recursively; a value that is nothing
// but the reference becomes the variable's text (serverless/components src/cli/utils.js,
// resolveVariables, called from src/cli/commands-cn/utils.js). The CLI leaves an unset variable
// undefined; this check refuses it instead.
function resolveEnv(value, missing) {
  if (typeof value === 'string') {
    return value.replace(/\$\{env:([\w.-]+)\}/g, (_, name) => {
      if (process.env[name] === undefined) missing.add(name);
      return process.env[name] ?? '';
    });
  }
  if (Array.isArray(value)) return value.map((item) => resolveEnv(item, missing));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveEnv(v, missing)]));
  }
  return value;
}

function loadServerlessYml(file) {
  const yaml = require('js-yaml');
  const missing = new Set();
  const config = resolveEnv(yaml.load(fs.readFileSync(file, 'utf8')), missing);
  if (missing.size) throw new Error(`not set in the deploy shell: ${[...missing].join(', ')}`);
  return config;
}

function multiScfFunctions(config) {
  const { inputs } = config;
  const common = JSON.parse(
    JSON.stringify({
      ...inputs,
      type: inputs.type || 'event',
      namespace: inputs.namespace || 'default',
      runtime: inputs.runtime || 'Nodejs12.16',
      description: inputs.description || 'Created by Serverless',
    }),
  );
  delete common.src;
  return Object.entries(inputs.functions).map(([key, func]) => {
    const merged = { ...common, ...func };
    const { environments = [] } = merged;
    if (Array.isArray(environments)) {
      merged.environment = {
        variables: Object.fromEntries(environments.map(({ key: k, value }) => [k, value])),
      };
    }
    if (merged.vpc) merged.vpcConfig = merged.vpc;
    merged.key = key;
    merged.name = merged.name || `${config.name}-${config.stage}-${config.app}-${key}`;
    return merged;
  });
}

function serverless(file) {
  const { formatInputs } = require('tencent-component-toolkit/lib/modules/scf/utils');
  const TRIGGERS = require('tencent-component-toolkit/lib/modules/triggers').default;

  const config = loadServerlessYml(file);
  const functions = multiScfFunctions(config);
  const byKey = Object.fromEntries(functions.map((f) => [f.key, f]));
  const region = config.inputs.region;
  const triggers = (config.inputs.triggers || []).map((trigger) => {
    const Trigger = TRIGGERS[trigger.type];
    if (!Trigger) throw new Error(`the toolkit has no trigger type ${trigger.type}`);
    if (trigger.type === 'apigw') {
      // multi-scf rebuilds each API's function block (formatTriggerInputs), so nothing a
      // serverless.yml writes there survives; what reaches API Gateway is computed by the
      // toolkit's API entity from that block.
      const { default: ApiEntity } = require('tencent-component-toolkit/lib/modules/apigw/entities/api');
      const entity = new ApiEntity({}, region);
      return {
        type: 'apigw',
        apis: trigger.parameters.apis.map((api) =>
          entity.formatInput({
            serviceId: 'service-check',
            endpoint: {
              ...api,
              function: {
                name: byKey[api.function].name,
                type: byKey[api.function].type,
                functionName: byKey[api.function].name,
                functionNamespace: byKey[api.function].namespace,
                functionQualifier: trigger.parameters.qualifier,
              },
            },
          }),
        ),
      };
    }
    const target = byKey[trigger.function];
    if (!target) throw new Error(`Function ${trigger.function} not in deploy list`);
    const inputs = {
      ...trigger,
      namespace: target.namespace,
      functionName: target.name,
      function: { name: target.name, type: target.type, namespace: target.namespace },
    };
    return new Trigger({ credentials: {}, region }).formatInputs({ region, inputs }).triggerInputs;
  });
  return { functions: functions.map((f) => formatInputs(f)), triggers };
}

async function cloudbase(file) {
  const _ = require('lodash');
  const { ConfigParser } = require('@cloudbase/toolbox');
  const config = await new ConfigParser({ configPath: path.resolve(file) }).get();
  if (config && config.functionDefaultConfig && config.functions && config.functions.length) {
    config.functions = config.functions.map((raw) => _.merge({}, config.functionDefaultConfig, raw));
  }
  return config;
}

async function main() {
  const [kind, file] = process.argv.slice(2);
  const run = { serverless, cloudbase }[kind];
  if (!run || !file) throw new Error('usage: format.js serverless|cloudbase FILE');
  process.stdout.write(JSON.stringify(await run(file), null, 2) + '\n');
}

main().catch((error) => {
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
});
