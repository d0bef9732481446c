//! template.yaml with CloudFormation's intrinsic functions resolved for a
//! set of parameters (`!Ref`, `!Sub`, `!GetAtt`, `!If` and the conditions,
//! `!Join`, `!Split`), for tests that check what a deployed stack would hold:
//! resources get names and ARNs of their logical ids in one account and
//! region.

use std::collections::HashMap;

use serde_json::{Value as Json, json};
use serde_norway::Value;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const STACK: &str = "tc";

pub fn template() -> Value {
    let path = tenant_config_local_stack::process::workspace_root().join("template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// template.yaml with its intrinsic functions resolved for a set of
/// parameters (defaults, plus overrides), as CloudFormation would.
pub struct Resolved {
    pub template: Value,
    pub parameters: HashMap<String, Json>,
    conditions: HashMap<String, bool>,
}

impl Resolved {
    pub fn new(template: Value, overrides: &[(&str, Json)]) -> Self {
        let mut parameters = HashMap::new();
        for (name, parameter) in template["Parameters"].as_mapping().unwrap() {
            let name = name.as_str().unwrap().to_owned();
            let default = parameter["Default"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    parameter["Default"]
                        .as_i64()
                        .map(|n| n.to_string())
                        .or_else(|| parameter["Default"].as_bool().map(|b| b.to_string()))
                });
            let value = match (parameter["Type"].as_str(), default) {
                (Some("CommaDelimitedList"), Some(text)) => {
                    json!(text.split(',').map(str::trim).collect::<Vec<_>>())
                }
                (_, Some(text)) => json!(text),
                (_, None) => json!(""),
            };
            parameters.insert(name, value);
        }
        for (name, value) in overrides {
            assert!(parameters.contains_key(*name), "no parameter {name}");
            parameters.insert((*name).to_owned(), value.clone());
        }
        let mut resolved = Self {
            template,
            parameters,
            conditions: HashMap::new(),
        };
        // Conditions may name other conditions: resolve until all are known.
        let names: Vec<String> = resolved.template["Conditions"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        while resolved.conditions.len() < names.len() {
            let before = resolved.conditions.len();
            for name in &names {
                if resolved.conditions.contains_key(name) {
                    continue;
                }
                let body = resolved.template["Conditions"][name.as_str()].clone();
                if let Some(value) = resolved.condition_value(&body) {
                    resolved.conditions.insert(name.clone(), value);
                }
            }
            assert!(
                resolved.conditions.len() > before,
                "conditions form a cycle"
            );
        }
        resolved
    }

    /// A condition's value, or None while one it names is still unknown.
    fn condition_value(&self, body: &Value) -> Option<bool> {
        let Value::Tagged(tagged) = body else {
            panic!("a condition function: {body:?}")
        };
        let args = tagged.value.as_sequence();
        Some(match tagged.tag.to_string().trim_start_matches('!') {
            "Equals" => {
                // CloudFormation compares strings: a Number parameter "0"
                // equals the literal 0.
                let args = args.unwrap();
                let text = |v: Option<Json>| match v {
                    Some(Json::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                text(self.resolve(&args[0])) == text(self.resolve(&args[1]))
            }
            "Not" => !self.condition_value(&args.unwrap()[0])?,
            "And" => {
                let mut all = true;
                for arg in args.unwrap() {
                    all &= self.condition_value(arg)?;
                }
                all
            }
            "Or" => {
                let mut any = false;
                for arg in args.unwrap() {
                    any |= self.condition_value(arg)?;
                }
                any
            }
            "Condition" => *self.conditions.get(tagged.value.as_str().unwrap())?,
            other => panic!("condition function {other}"),
        })
    }

    pub fn condition(&self, name: &str) -> bool {
        *self
            .conditions
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name}"))
    }

    fn resource_type(&self, logical: &str) -> String {
        match self.template["Resources"][logical]["Type"].as_str() {
            Some(kind) => kind.to_owned(),
            // The roles SAM generates for its functions ({Function}Role).
            None if logical.ends_with("FunctionRole") => "AWS::IAM::Role".to_owned(),
            None => panic!("no resource {logical}"),
        }
    }

    fn exists(&self, logical: &str) -> bool {
        match self.template["Resources"][logical]["Condition"].as_str() {
            Some(condition) => self.condition(condition),
            None => true,
        }
    }

    fn reference(&self, name: &str) -> Option<Json> {
        Some(match name {
            "AWS::Partition" => json!("aws"),
            "AWS::Region" => json!(REGION),
            "AWS::AccountId" => json!(ACCOUNT),
            "AWS::StackName" => json!(STACK),
            "AWS::NoValue" => return None,
            _ => match self.parameters.get(name) {
                Some(value) => value.clone(),
                None => match {
                    self.existing(name);
                    self.resource_type(name)
                }
                .as_str()
                {
                    "AWS::IAM::ManagedPolicy" => {
                        json!(format!("arn:aws:iam::{ACCOUNT}:policy/{name}"))
                    }
                    "AWS::SQS::Queue" => json!(format!(
                        "https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
                    )),
                    "AWS::SNS::Topic" => json!(self.arn(name)),
                    _ => json!(name),
                },
            },
        })
    }

    pub fn arn(&self, logical: &str) -> String {
        match self.resource_type(logical).as_str() {
            "AWS::IAM::Role" => format!("arn:aws:iam::{ACCOUNT}:role/{logical}"),
            "AWS::DynamoDB::Table" => {
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{logical}")
            }
            "AWS::KMS::Key" => format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{logical}"),
            "AWS::SQS::Queue" => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{logical}"),
            "AWS::SNS::Topic" => format!("arn:aws:sns:{REGION}:{ACCOUNT}:{logical}"),
            "AWS::ServiceDiscovery::Service" => {
                format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/srv-{logical}")
            }
            "AWS::Cognito::UserPool" => {
                format!("arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_{logical}")
            }
            "AWS::Serverless::Function" => {
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical}")
            }
            other => format!("arn:aws:{other}:{logical}"),
        }
    }

    /// A resource that a reference may name: it must exist under the
    /// parameters (CloudFormation refuses a template that references a
    /// resource its condition leaves out).
    fn existing(&self, logical: &str) {
        if self.template["Resources"][logical].is_null() {
            return; // generated by SAM ({Function}Role)
        }
        assert!(
            self.exists(logical),
            "a reference to {logical}, which these parameters do not create"
        );
    }

    fn attribute(&self, logical: &str, attribute: &str) -> Json {
        self.existing(logical);
        json!(match attribute {
            "Arn" => self.arn(logical),
            "Id" => format!("srv-{logical}"),
            "StreamArn" => format!("{}/stream/latest", self.arn(logical)),
            other => format!("{logical}.{other}"),
        })
    }

    fn substitute(&self, text: &str, variables: &HashMap<String, Json>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else {
                let value = match variables.get(name) {
                    Some(value) => value.clone(),
                    None => match name.split_once('.') {
                        Some((logical, attribute)) => self.attribute(logical, attribute),
                        None => self.reference(name).expect("no NoValue in a Sub"),
                    },
                };
                out.push_str(value.as_str().expect("a string in a Sub"));
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The value CloudFormation would see; None is AWS::NoValue.
    pub fn resolve(&self, value: &Value) -> Option<Json> {
        Some(match value {
            Value::Null => Json::Null,
            Value::Bool(b) => json!(b),
            Value::Number(n) => serde_json::to_value(n).unwrap(),
            Value::String(s) => json!(s),
            Value::Sequence(items) => {
                Json::Array(items.iter().filter_map(|v| self.resolve(v)).collect())
            }
            Value::Mapping(map) => Json::Object(
                map.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), self.resolve(v)?)))
                    .collect(),
            ),
            Value::Tagged(tagged) => {
                let args = tagged.value.as_sequence();
                match tagged.tag.to_string().trim_start_matches('!') {
                    "Ref" => return self.reference(tagged.value.as_str().unwrap()),
                    "GetAtt" => {
                        let (logical, attribute) = match &tagged.value {
                            Value::String(s) => s.split_once('.').unwrap(),
                            other => (other[0].as_str().unwrap(), other[1].as_str().unwrap()),
                        };
                        self.attribute(logical, attribute)
                    }
                    "Sub" => match &tagged.value {
                        Value::String(text) => json!(self.substitute(text, &HashMap::new())),
                        other => {
                            let variables = other[1]
                                .as_mapping()
                                .unwrap()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().unwrap().to_owned(), self.resolve(v).unwrap())
                                })
                                .collect();
                            json!(self.substitute(other[0].as_str().unwrap(), &variables))
                        }
                    },
                    "If" => {
                        let args = args.unwrap();
                        let branch = if self.condition(args[0].as_str().unwrap()) {
                            &args[1]
                        } else {
                            &args[2]
                        };
                        return self.resolve(branch);
                    }
                    "Join" => {
                        let args = args.unwrap();
                        let items = self.resolve(&args[1]).unwrap();
                        let parts: Vec<String> = items
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|item| item.as_str().unwrap().to_owned())
                            .collect();
                        json!(parts.join(args[0].as_str().unwrap()))
                    }
                    "Split" => {
                        let args = args.unwrap();
                        let text = self.resolve(&args[1]).unwrap();
                        json!(
                            text.as_str()
                                .unwrap()
                                .split(args[0].as_str().unwrap())
                                .collect::<Vec<_>>()
                        )
                    }
                    "Equals" | "Not" | "And" | "Or" | "Condition" => {
                        json!(self.condition_value(value).unwrap())
                    }
                    other => panic!("intrinsic function {other} is not resolved here"),
                }
            }
        })
    }

    fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.template["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap(), v))
            .filter(|(name, _)| self.exists(name))
    }

    /// Every identity policy of a role: a SAM function's `Policies` (its
    /// generated `{Function}Role`), a role's inline and managed policies, and
    /// policies that attach themselves with `Roles`.
    pub fn identity_policies(&self, role: &str) -> Vec<Json> {
        let mut found = Vec::new();
        for (name, resource) in self.resources() {
            let properties = &resource["Properties"];
            match resource["Type"].as_str().unwrap() {
                "AWS::Serverless::Function" if format!("{name}Role") == role => {
                    for policy in properties["Policies"].as_sequence().into_iter().flatten() {
                        assert!(
                            policy.get("Statement").is_some(),
                            "{name}: only policy documents are evaluated here, not {policy:?}"
                        );
                        found.push(self.resolve(policy).unwrap());
                    }
                }
                "AWS::IAM::Role" if name == role => {
                    for policy in properties["Policies"].as_sequence().into_iter().flatten() {
                        found.push(self.resolve(&policy["PolicyDocument"]).unwrap());
                    }
                    assert!(
                        properties["ManagedPolicyArns"].is_null(),
                        "{name}: attach managed policies with their Roles"
                    );
                }
                "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => {
                    let roles = self.resolve(&properties["Roles"]).unwrap_or(json!([]));
                    if roles.as_array().into_iter().flatten().any(|r| r == role) {
                        found.push(self.resolve(&properties["PolicyDocument"]).unwrap());
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// `SecureStringKmsKeyArn` when given.
    pub fn given_key(&self) -> Option<String> {
        self.parameters["SecureStringKmsKeyArn"]
            .as_str()
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    }

    pub fn trust_policy(&self, role: &str) -> Json {
        self.resolve(&self.template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])
            .unwrap()
    }

    pub fn key_policy(&self, key: &str) -> Json {
        self.resolve(&self.template["Resources"][key]["Properties"]["KeyPolicy"])
            .unwrap()
    }
}
