// "View code": the playground's request as curl, Python (openai SDK) and JavaScript
// (openai npm SDK). The key is always a placeholder.

const OPENAI_PARAMS = new Set(["model", "messages", "stream", "stream_options", "temperature", "top_p",
  "max_tokens", "stop", "seed", "response_format"]);
export const KEY_PLACEHOLDER = "YOUR_API_KEY";

export function baseUrl() {
  return `${location.origin}/v1`;
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

export function curlCode(body) {
  return [
    `curl ${baseUrl()}/chat/completions \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -H "Authorization: Bearer ${KEY_PLACEHOLDER}" \\`,
    ...(body.stream ? ["  -N \\"] : []),
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join("\n") + "\n";
}

const isScalar = (v) => v === null || typeof v !== "object";

/** A JSON value as a Python literal, indented like black would. */
export function pyLiteral(value, indent = 0) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "None";
  if (typeof value === "string") return JSON.stringify(value);
  const pad = " ".repeat(indent + 4);
  const end = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const inline = `[${value.map((v) => pyLiteral(v, 0)).join(", ")}]`;
    if (value.every(isScalar) && inline.length + indent < 80) return inline;
    return `[\n${value.map((v) => pad + pyLiteral(v, indent + 4)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  const inline = `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v, 0)}`).join(", ")}}`;
  if (entries.every(([, v]) => isScalar(v)) && inline.length + indent < 88) return inline;
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)}`).join(",\n")},\n${end}}`;
}

export function pythonCode(body) {
  const args = [];
  const extra = {};
  for (const [k, v] of Object.entries(body)) {
    if (OPENAI_PARAMS.has(k)) args.push(`    ${k}=${pyLiteral(v, 4)},`);
    else extra[k] = v;
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${pyLiteral(extra, 4)},`);
  const lines = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(baseUrl())}, api_key=${JSON.stringify(KEY_PLACEHOLDER)})`,
    "",
  ];
  if (body.stream) {
    lines.push("stream = client.chat.completions.create(", ...args, ")",
      "for chunk in stream:",
      "    if chunk.choices and chunk.choices[0].delta.content:",
      "        print(chunk.choices[0].delta.content, end=\"\", flush=True)",
      "    if chunk.usage:",
      "        print(f\"\\n\\n{chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens\")");
  } else {
    lines.push("completion = client.chat.completions.create(", ...args, ")",
      "print(completion.choices[0].message.content)");
  }
  return `${lines.join("\n")}\n`;
}

/** A JSON value as a JavaScript literal (prettier's style: 2 spaces, trailing commas). */
export function jsLiteral(value, indent = 0) {
  if (value === null || value === undefined) return "null";
  if (typeof value !== "object") return JSON.stringify(value);
  const pad = " ".repeat(indent + 2);
  const end = " ".repeat(indent);
  const key = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k));
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const inline = `[${value.map((v) => jsLiteral(v)).join(", ")}]`;
    if (value.every(isScalar) && inline.length + indent < 80) return inline;
    return `[\n${value.map((v) => pad + jsLiteral(v, indent + 2)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  const inline = `{ ${entries.map(([k, v]) => `${key(k)}: ${jsLiteral(v)}`).join(", ")} }`;
  if (entries.every(([, v]) => isScalar(v)) && inline.length + indent < 80) return inline;
  return `{\n${entries.map(([k, v]) => `${pad}${key(k)}: ${jsLiteral(v, indent + 2)}`).join(",\n")},\n${end}}`;
}

export function jsCode(body) {
  const extras = Object.keys(body).filter((k) => !OPENAI_PARAMS.has(k));
  const json = jsLiteral(body);
  const lines = [
    'import OpenAI from "openai";',
    "",
    "const client = new OpenAI({",
    `  baseURL: ${JSON.stringify(baseUrl())},`,
    `  apiKey: ${JSON.stringify(KEY_PLACEHOLDER)},`,
    "});",
    "",
  ];
  if (extras.length) lines.push(`// ${extras.join(", ")}: Kathan's own parameters, sent as they are in the body.`);
  if (body.stream) {
    lines.push(`const stream = await client.chat.completions.create(${json});`, "",
      "for await (const chunk of stream) {",
      '  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");',
      "  if (chunk.usage) console.log(`\\n\\n${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens`);",
      "}");
  } else {
    lines.push(`const completion = await client.chat.completions.create(${json});`,
      "console.log(completion.choices[0].message.content);");
  }
  return `${lines.join("\n")}\n`;
}
